package mount

import (
	"fmt"
	"sync"
)

// Fake is an in-memory Mounter for unit tests. It records calls so tests can assert that an
// idempotent publish did not mount again. Err* fields inject failures.
type Fake struct {
	mu      sync.Mutex
	mounts  map[string]string // target -> source
	Binds   int
	Unmnts  int
	BindErr error
	// UnmountErr fails Unmount; IsMountErr fails IsMountPoint.
	UnmountErr error
	IsMountErr error
}

var _ Mounter = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{mounts: map[string]string{}} }

func (f *Fake) Bind(source, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.BindErr != nil {
		return f.BindErr
	}
	f.Binds++
	f.mounts[target] = source
	return nil
}

func (f *Fake) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.UnmountErr != nil {
		return f.UnmountErr
	}
	if _, ok := f.mounts[target]; !ok {
		return fmt.Errorf("unmount %s: not mounted", target)
	}
	f.Unmnts++
	delete(f.mounts, target)
	return nil
}

func (f *Fake) IsMountPoint(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.IsMountErr != nil {
		return false, f.IsMountErr
	}
	_, ok := f.mounts[path]
	return ok, nil
}

// Mounted returns the source mounted on target, if any.
func (f *Fake) Mounted(target string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.mounts[target]
	return s, ok
}

// Count is the number of current mounts.
func (f *Fake) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mounts)
}
