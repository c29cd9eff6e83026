// Package checkreport is the report `nginx-mesh-hooks check -o json` prints: the groups, the
// statuses and the results of the named checks. hooks/check writes it and the e2e suite decodes
// it, so it lives here, outside both binaries' folders; the checks themselves stay in
// hooks/check.
package checkreport

import (
	"encoding/json"
	"fmt"
	"io"
)

// Group is a set of checks run together.
type Group string

const (
	PreInstall   Group = "pre-install"
	ControlPlane Group = "control-plane"
	DataPlane    Group = "data-plane"
)

// Status of one result. The order is the severity.
type Status string

const (
	OK   Status = "ok"
	Skip Status = "skip" // does not apply here (e.g. an OpenShift check on plain Kubernetes)
	Warn Status = "warn" // works, but look at it
	Fail Status = "fail"
)

// DocPage holds one section per check; a section's anchor is the check's name.
const DocPage = "docs/check.md"

// Result is one outcome of a check; a check yields one per subject (a namespace, for the
// data-plane checks) or one alone.
type Result struct {
	Check   string   `json:"check"`
	Group   Group    `json:"group"`
	Subject string   `json:"subject,omitempty"`
	Status  Status   `json:"status"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
	Hint    string   `json:"hint,omitempty"` // only when the status is warn or fail
	Doc     string   `json:"doc"`
}

// With returns the result with details appended.
func (r Result) With(details ...string) Result {
	r.Details = append(r.Details, details...)
	return r
}

// WithHint returns the result with its hint, what to do about it, set.
func (r Result) WithHint(format string, a ...any) Result {
	r.Hint = fmt.Sprintf(format, a...)
	return r
}

// Report is the outcome of a run.
type Report struct {
	Namespace string   `json:"namespace"`
	Release   string   `json:"release"`
	Groups    []Group  `json:"groups"`
	Results   []Result `json:"results"`
	Failed    int      `json:"failed"`
	Warnings  int      `json:"warnings"`
}

// OK tells whether no check failed (warnings allowed).
func (r *Report) OK() bool { return r.Failed == 0 }

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
