package mount

import (
	"fmt"
	"sync"
)

// Fake is an in-memory Mounter for unit tests. Like the kernel it stacks mounts: binding a
// target twice needs two unmounts, which lets tests check that publish never stacks and that
// unpublish peels every layer. Counters and Err fields let tests assert calls and inject failures.
type Fake struct {
	mu     sync.Mutex
	mounts map[string][]string // target -> stacked sources, last on top
	// Binds and Unmounts count successful calls.
	Binds, Unmounts int
	// BindErr, UnmountErr and IsMountErr, when set, make the calls fail.
	BindErr, UnmountErr, IsMountErr error
}

var _ Mounter = (*Fake)(nil)

// NewFake returns a Fake with nothing mounted.
func NewFake() *Fake { return &Fake{mounts: map[string][]string{}} }

func (f *Fake) Bind(source, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.BindErr != nil {
		return f.BindErr
	}
	f.Binds++
	f.mounts[target] = append(f.mounts[target], source)
	return nil
}

func (f *Fake) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.UnmountErr != nil {
		return f.UnmountErr
	}
	stack := f.mounts[target]
	if len(stack) == 0 {
		return fmt.Errorf("unmount %s: not mounted", target)
	}
	f.Unmounts++
	if len(stack) == 1 {
		delete(f.mounts, target)
	} else {
		f.mounts[target] = stack[:len(stack)-1]
	}
	return nil
}

func (f *Fake) IsMountPoint(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.IsMountErr != nil {
		return false, f.IsMountErr
	}
	return len(f.mounts[path]) > 0, nil
}

// Layers returns the sources stacked on target, bottom first.
func (f *Fake) Layers(target string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.mounts[target]...)
}

// Count is the number of mounted targets.
func (f *Fake) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mounts)
}
