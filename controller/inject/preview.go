package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Preview injects every object of a YAML or JSON stream (`nginx-mesh-controller inject -f`,
// like `istioctl kube-inject`) and writes the mutated objects as YAML documents. Pods and the
// pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs are
// injected with the webhook's code; other objects pass through unchanged. namespace is used
// for objects that do not name one. Why an object was left alone goes to notes. A denial fails
// with the object named.
func (i *Injector) Preview(in io.Reader, out, notes io.Writer, namespace string) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(in), 4096)
	codecs := serializer.NewCodecFactory(scheme.Scheme)
	first := true
	for n := 1; ; n++ {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		obj, gvk, err := codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		var doc any = raw
		if err == nil {
			skipped, scc, err := i.injectObject(obj, namespace)
			if err != nil {
				return fmt.Errorf("document %d (%s): %w", n, gvk.Kind, err)
			}
			if skipped != "" {
				fmt.Fprintf(notes, "document %d (%s): not injected: %s\n", n, gvk.Kind, skipped)
			}
			if scc != "" {
				name := ""
				if m, ok := obj.(metav1.Object); ok {
					name = " " + m.GetName()
				}
				fmt.Fprintf(notes, "document %d (%s%s): SCC: %s\n", n, gvk.Kind, name, scc)
			}
			obj.GetObjectKind().SetGroupVersionKind(*gvk)
			doc = obj
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return fmt.Errorf("document %d: %w", n, err)
		}
		if !first {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if _, err := out.Write(b); err != nil {
			return err
		}
	}
}

// injectObject injects a pod or a pod template; scc is the injected pod's SCC note.
func (i *Injector) injectObject(obj runtime.Object, namespace string) (skipped, scc string, err error) {
	var owner metav1.ObjectMeta
	var t *corev1.PodTemplateSpec
	switch o := obj.(type) {
	case *corev1.Pod:
		ns := nsOf(o.ObjectMeta, namespace)
		res, err := i.Inject(ns, o)
		if err != nil || res.Skipped != "" {
			return res.Skipped, "", named(o.Name, err)
		}
		return "", i.cfg.SCCNote(ns, o), nil
	case *appsv1.Deployment:
		owner, t = o.ObjectMeta, &o.Spec.Template
	case *appsv1.StatefulSet:
		owner, t = o.ObjectMeta, &o.Spec.Template
	case *appsv1.DaemonSet:
		owner, t = o.ObjectMeta, &o.Spec.Template
	case *appsv1.ReplicaSet:
		owner, t = o.ObjectMeta, &o.Spec.Template
	case *batchv1.Job:
		owner, t = o.ObjectMeta, &o.Spec.Template
	case *batchv1.CronJob:
		owner, t = o.ObjectMeta, &o.Spec.JobTemplate.Spec.Template
	default:
		return "not a pod or a pod template", "", nil
	}
	// The pod a controller would create from t, injected and written back.
	ns := nsOf(owner, namespace)
	pod := &corev1.Pod{ObjectMeta: *t.ObjectMeta.DeepCopy(), Spec: *t.Spec.DeepCopy()}
	res, err := i.Inject(ns, pod)
	if err != nil || res.Skipped != "" {
		return res.Skipped, "", named(owner.Name, err)
	}
	t.ObjectMeta, t.Spec = pod.ObjectMeta, pod.Spec
	return "", i.cfg.SCCNote(ns, pod), nil
}

func nsOf(m metav1.ObjectMeta, def string) string {
	if m.Namespace != "" {
		return m.Namespace
	}
	return def
}

func named(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
