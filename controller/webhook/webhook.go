// Package webhook serves the injector as a controller-runtime admission handler: pod CREATE in,
// the inject package's mutation out as a JSON patch, its denials as admission denials.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
	"github.com/nginx-mesh/nginx-mesh/controller/metrics"
)

// Path is where the webhook configuration sends pod CREATE reviews.
const Path = "/inject"

// Handler is the admission handler. A pod the mutation refuses is denied with the reason. A
// failure of the injector itself is answered as the webhook's failurePolicy says (see failed):
// the API server applies that policy only when the call fails, never to an answer.
type Handler struct {
	Injector *inject.Injector
	// Metrics records each review (nil: none).
	Metrics *metrics.Metrics
}

// NewHandler returns a handler for inj.
func NewHandler(inj *inject.Injector) *Handler { return &Handler{Injector: inj} }

// Register mounts the handler on a controller-runtime webhook server; m may be nil.
func Register(srv webhook.Server, inj *inject.Injector, m *metrics.Metrics) {
	srv.Register(Path, &webhook.Admission{Handler: &Handler{Injector: inj, Metrics: m}})
}

// Handle implements admission.Handler.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resp, result, refusal := h.handle(req)
	if resp.Allowed {
		refusal = ""
	}
	h.Metrics.Admitted(start, result, refusal)
	return resp
}

// handle answers req and names the result and, should the answer refuse the pod, the reason.
func (h *Handler) handle(req admission.Request) (admission.Response, string, string) {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("nginx-mesh injects pods at CREATE only"), metrics.ResultSkipped, ""
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return h.failed(http.StatusBadRequest, fmt.Errorf("nginx-mesh injector: decode pod %s/%s: %w", req.Namespace, req.Name, err)), metrics.ResultError, metrics.ReasonDecode
	}
	appendOnly := h.Injector.AppendOnly()
	var before snapshot
	if appendOnly {
		before = takeSnapshot(pod)
	}
	_, ownPin := pod.Annotations[nginxmesh.RequiredSCCAnnotation]
	res, err := h.Injector.Inject(req.Namespace, pod)
	switch {
	case inject.IsDenied(err):
		return admission.Denied(fmt.Sprintf("nginx-mesh injector refused pod %s: %s", podName(req, pod), err)), metrics.ResultDenied, metrics.ReasonDenied
	case err != nil:
		return h.failed(http.StatusInternalServerError, fmt.Errorf("nginx-mesh injector: pod %s: %w", podName(req, pod), err)), metrics.ResultError, metrics.ReasonInternal
	case res.Skipped != "":
		return admission.Allowed("nginx-mesh: not injected: " + res.Skipped), metrics.ResultSkipped, ""
	}
	var resp admission.Response
	var ops []jsonpatch.Operation
	ok := false
	if appendOnly {
		ops, ok = appendPatch(before, pod)
	}
	if ok {
		resp = admission.Patched("", ops...)
	} else {
		// A mutation beyond appends and annotations: the generic diff of the two documents.
		out, err := json.Marshal(pod)
		if err != nil {
			return h.failed(http.StatusInternalServerError, fmt.Errorf("nginx-mesh injector: pod %s: encode: %w", podName(req, pod), err)), metrics.ResultError, metrics.ReasonInternal
		}
		resp = admission.PatchResponseFromRaw(req.Object.Raw, out)
	}
	// The opt-in pin (sidecar.pinSCC): OpenShift refuses the pod unless its ServiceAccount may
	// use the SCC, and its refusal does not say how to grant it; the warning does.
	if scc := h.Injector.Config().RequiredSCC; scc != "" && !ownPin {
		resp.Warnings = append(resp.Warnings, "nginx-mesh: pod "+podName(req, pod)+" SCC: "+h.Injector.Config().SCCNote(req.Namespace, pod))
	}
	return resp, metrics.ResultInjected, ""
}

// failed answers an internal error. With failurePolicy Fail (the default) the pod is refused
// with the cause (admission.Errored: allowed false, the HTTP code in the status). With Ignore it
// is let through unchanged, with the cause as a warning that kubectl prints: the same outcome as
// when the webhook cannot be reached, which is what the operator chose.
func (h *Handler) failed(code int32, err error) admission.Response {
	if h.Injector.Config().FailurePolicy != string(admissionregistrationv1.Ignore) {
		return admission.Errored(code, err)
	}
	r := admission.Allowed("")
	r.Warnings = []string{err.Error() + "; failurePolicy Ignore lets the pod through without the mesh (no Workload API, no proxy)"}
	return r
}

// podName names the pod in messages; pods of controllers have only a generateName at CREATE.
func podName(req admission.Request, pod *corev1.Pod) string {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	return req.Namespace + "/" + name
}
