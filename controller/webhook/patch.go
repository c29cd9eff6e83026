package webhook

import (
	"sort"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// snapshot is what an append-only mutation (inject.Step.AppendOnly) can change, taken before it
// runs: a copy of the annotations, the lengths of the lists it may append to, and the names of
// the containers (it may insert new ones). Taking it costs a map copy, where a deep copy of the
// pod costs more than the rest of the handler.
type snapshot struct {
	annotations map[string]string
	volumes     int
	containers  [2][]lists // initContainers, containers
}

type lists struct {
	name        string
	mounts, env int
}

func takeSnapshot(p *corev1.Pod) snapshot {
	s := snapshot{volumes: len(p.Spec.Volumes)}
	if p.Annotations != nil {
		s.annotations = make(map[string]string, len(p.Annotations))
		for k, v := range p.Annotations {
			s.annotations[k] = v
		}
	}
	for i, cs := range [2][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			s.containers[i] = append(s.containers[i], lists{c.Name, len(c.VolumeMounts), len(c.Env)})
		}
	}
	return s
}

// appendPatch is the JSON patch that turns the pod of the snapshot into p, given that an
// append-only mutation made p from it. ok is false when p shows a change that no append-only
// mutation makes (a removed annotation, a shorter list, a container removed or renamed): the
// caller then diffs the documents.
func appendPatch(s snapshot, p *corev1.Pod) (ops []jsonpatch.Operation, ok bool) {
	for k := range s.annotations {
		if _, kept := p.Annotations[k]; !kept {
			return nil, false
		}
	}
	if len(s.annotations) == 0 && len(p.Annotations) > 0 {
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", p.Annotations))
	} else {
		keys := make([]string, 0, len(p.Annotations))
		for k, v := range p.Annotations {
			if old, had := s.annotations[k]; !had || old != v {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escape(k), p.Annotations[k]))
		}
	}
	var good bool
	if ops, good = appendList(ops, "/spec/volumes", s.volumes, p.Spec.Volumes); !good {
		return nil, false
	}
	for i, l := range []struct {
		path string
		cs   []corev1.Container
	}{{"/spec/initContainers", p.Spec.InitContainers}, {"/spec/containers", p.Spec.Containers}} {
		if ops, good = containerOps(ops, l.path, s.containers[i], l.cs); !good {
			return nil, false
		}
	}
	return ops, true
}

// containerOps adds the ops for one container list: appends to the mounts and environment of
// the containers the snapshot had (at their old indices), then inserts the new containers in
// ascending order of their final index, so each insertion lands where it is in cs.
func containerOps(ops []jsonpatch.Operation, path string, had []lists, cs []corev1.Container) ([]jsonpatch.Operation, bool) {
	if len(had) == 0 && len(cs) > 0 {
		return append(ops, jsonpatch.NewOperation("add", path, cs)), true
	}
	old := make(map[string]bool, len(had))
	for _, h := range had {
		old[h.name] = true
	}
	var inserted []int
	j := 0
	for i, c := range cs {
		if j < len(had) && c.Name == had[j].name {
			var good bool
			base := path + "/" + strconv.Itoa(j)
			if ops, good = appendList(ops, base+"/volumeMounts", had[j].mounts, c.VolumeMounts); !good {
				return nil, false
			}
			if ops, good = appendList(ops, base+"/env", had[j].env, c.Env); !good {
				return nil, false
			}
			j++
			continue
		}
		if old[c.Name] {
			return nil, false // moved, or a new container under an old name
		}
		inserted = append(inserted, i)
	}
	if j != len(had) {
		return nil, false // a container removed or renamed
	}
	for _, i := range inserted {
		ops = append(ops, jsonpatch.NewOperation("add", path+"/"+strconv.Itoa(i), cs[i]))
	}
	return ops, true
}

// appendList adds the ops that append a[had:] to a list that had had elements.
func appendList[T any](ops []jsonpatch.Operation, path string, had int, a []T) ([]jsonpatch.Operation, bool) {
	switch {
	case len(a) < had:
		return ops, false
	case len(a) == had:
	case had == 0:
		ops = append(ops, jsonpatch.NewOperation("add", path, a))
	default:
		for _, x := range a[had:] {
			ops = append(ops, jsonpatch.NewOperation("add", path+"/-", x))
		}
	}
	return ops, true
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escape makes a map key a JSON pointer token (RFC 6901).
func escape(k string) string { return pointerEscaper.Replace(k) }
