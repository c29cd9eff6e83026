package webhook

import (
	"reflect"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// appendPatch builds the JSON patch of a mutation that only sets annotations and appends
// volumes, volume mounts and environment variables (today's injection) without the generic
// diff of two JSON documents, which costs most of the handler's time. ok is false when after
// differs from before in any other way; the caller then falls back to the generic diff.
func appendPatch(before, after *corev1.Pod) (ops []jsonpatch.Operation, ok bool) {
	b, a := shallow(before), shallow(after)
	// Annotations: added or changed keys (removals are not ours to make).
	for k := range b.Annotations {
		if _, kept := a.Annotations[k]; !kept {
			return nil, false
		}
	}
	if len(b.Annotations) == 0 && len(a.Annotations) > 0 {
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", a.Annotations))
	} else {
		for _, k := range sortedKeys(a.Annotations) {
			if v, had := b.Annotations[k]; !had || v != a.Annotations[k] {
				ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escape(k), a.Annotations[k]))
			}
		}
	}
	b.Annotations, a.Annotations = nil, nil

	var good bool
	if ops, good = appendList(ops, "/spec/volumes", b.Spec.Volumes, a.Spec.Volumes); !good {
		return nil, false
	}
	b.Spec.Volumes, a.Spec.Volumes = nil, nil
	for _, l := range []struct {
		path string
		b, a []corev1.Container
	}{{"/spec/initContainers", b.Spec.InitContainers, a.Spec.InitContainers}, {"/spec/containers", b.Spec.Containers, a.Spec.Containers}} {
		if len(l.b) != len(l.a) {
			return nil, false
		}
		for i := range l.a {
			p := l.path + "/" + strconv.Itoa(i)
			if ops, good = appendList(ops, p+"/volumeMounts", l.b[i].VolumeMounts, l.a[i].VolumeMounts); !good {
				return nil, false
			}
			if ops, good = appendList(ops, p+"/env", l.b[i].Env, l.a[i].Env); !good {
				return nil, false
			}
			l.b[i].VolumeMounts, l.a[i].VolumeMounts, l.b[i].Env, l.a[i].Env = nil, nil, nil, nil
		}
	}
	return ops, reflect.DeepEqual(b, a)
}

// shallow copies the pod down to the fields appendPatch clears, so clearing them leaves the
// caller's pod alone (a deep copy costs more than the rest of the handler).
func shallow(p *corev1.Pod) *corev1.Pod {
	c := *p
	c.Spec.InitContainers = append([]corev1.Container(nil), p.Spec.InitContainers...)
	c.Spec.Containers = append([]corev1.Container(nil), p.Spec.Containers...)
	return &c
}

// appendList adds the ops that turn b into a when a is b plus elements at its end.
func appendList[T any](ops []jsonpatch.Operation, path string, b, a []T) ([]jsonpatch.Operation, bool) {
	if len(a) < len(b) || (len(b) > 0 && !reflect.DeepEqual(b, a[:len(b)])) {
		return ops, false
	}
	switch {
	case len(a) == len(b):
	case len(b) == 0:
		ops = append(ops, jsonpatch.NewOperation("add", path, a))
	default:
		for _, x := range a[len(b):] {
			ops = append(ops, jsonpatch.NewOperation("add", path+"/-", x))
		}
	}
	return ops, true
}

// escape makes a map key a JSON pointer token (RFC 6901).
func escape(k string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(k) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
