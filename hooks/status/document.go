package status

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// Document is a Report for scripts (`status -o json|yaml`): the same facts, errors as text
// next to the part they hide, injected pods as a list of owners.
type Document struct {
	Release           string         `json:"release"`
	ReleaseState      string         `json:"releaseState,omitempty"`
	ReleaseError      string         `json:"releaseError,omitempty"`
	OpenShift         bool           `json:"openShift"`
	DriverUnits       []UnitDocument `json:"driverUnits"`
	DriverUnitsError  string         `json:"driverUnitsError,omitempty"`
	OtherDrivers      []string       `json:"otherDrivers,omitempty"`
	LeftoverPods      []string       `json:"leftoverPods,omitempty"`
	LeftoverPodsError string         `json:"leftoverPodsError,omitempty"`
	InjectorWebhook   string         `json:"injectorWebhook,omitempty"`
	InjectorError     string         `json:"injectorWebhookError,omitempty"`
}

// UnitDocument is one driver unit of a Document.
type UnitDocument struct {
	Driver            string           `json:"driver"`
	KeepSet           []ObjectDocument `json:"keepSet"`
	Sentinels         []string         `json:"sentinels"` // "namespace/name: state"; empty: not running
	SentinelError     string           `json:"sentinelError,omitempty"`
	InjectedPods      *InjectedPods    `json:"injectedPods,omitempty"`
	InjectedPodsError string           `json:"injectedPodsError,omitempty"`
}

// ObjectDocument is one keep-set object: present or not, and which release owns it.
type ObjectDocument struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Present   bool   `json:"present"`
	Release   string `json:"release,omitempty"`
	Error     string `json:"error,omitempty"`
}

// InjectedPods are the pods that keep a driver, by namespace and top owner.
type InjectedPods struct {
	Total  int             `json:"total"`
	Owners []OwnerDocument `json:"owners"`
	Pods   []string        `json:"pods,omitempty"` // namespace/name of the first ones
}

// OwnerDocument is one top owner and how many injected pods it has.
type OwnerDocument struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Pods      int    `json:"pods"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Document returns the report for scripts.
func (r Report) Document() Document {
	d := Document{
		Release: r.Release, ReleaseState: r.ReleaseState, ReleaseError: errText(r.ReleaseErr), OpenShift: r.OpenShift,
		DriverUnits: []UnitDocument{}, DriverUnitsError: errText(r.UnitsErr), OtherDrivers: r.OtherDrivers,
		LeftoverPods: r.Orphans, LeftoverPodsError: errText(r.OrphansErr), InjectorWebhook: r.Injector, InjectorError: errText(r.InjectorErr),
	}
	for _, u := range r.Units {
		ud := UnitDocument{Driver: u.Driver, KeepSet: []ObjectDocument{}, Sentinels: u.Sentinels, SentinelError: errText(u.SentinelErr),
			InjectedPodsError: errText(u.InjectedErr)}
		if ud.Sentinels == nil {
			ud.Sentinels = []string{}
		}
		for _, s := range u.KeepSet {
			ud.KeepSet = append(ud.KeepSet, ObjectDocument{Kind: string(s.Ref.Kind), Namespace: s.Ref.Namespace, Name: s.Ref.Name,
				Present: s.Present, Release: s.Release, Error: errText(s.Err)})
		}
		if u.InjectedErr == nil {
			ip := &InjectedPods{Total: u.Injected.Total, Owners: []OwnerDocument{}, Pods: u.Injected.Pods}
			for _, o := range u.Injected.Owners() {
				ip.Owners = append(ip.Owners, OwnerDocument{Namespace: o.Namespace, Kind: o.Kind, Name: o.Name, Pods: u.Injected.ByOwner[o]})
			}
			ud.InjectedPods = ip
		}
		d.DriverUnits = append(d.DriverUnits, ud)
	}
	return d
}

// Write prints the document as "json" or "yaml".
func (d Document) Write(w io.Writer, format string) error {
	var b []byte
	var err error
	switch format {
	case "json":
		b, err = json.MarshalIndent(d, "", "  ")
		b = append(b, '\n')
	case "yaml":
		b, err = yaml.Marshal(d)
	default:
		return fmt.Errorf("output format %q: use json or yaml", format)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
