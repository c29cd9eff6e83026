// Package register keeps one SPIRE registration entry per injected, scheduled pod:
//
//	SPIFFE ID  spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>
//	parent     spiffe://<trustDomain>/spire/agent/k8s_psat/<cluster>/<node UID>
//	           (the agent ID SPIRE v1.13's k8s_psat server attestor gives the node's agent)
//	selector   k8s:pod-uid:<pod UID>
//	entry ID   nginx-mesh.<pod UID> (the prefix marks the entries the controller owns)
//
// Pod events are applied as they come, coalesced into Batch calls of the entry API; a full
// resync at start and every ResyncPeriod lists the entries, creates what is missing, fixes what
// drifted and deletes owned entries no pod wants. Entries without the prefix are never touched.
package register

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/metrics"
)

// Config describes the trust domain and the reconciler's pace.
type Config struct {
	TrustDomain string // e.g. cluster.local
	ClusterName string // the k8s_psat cluster name of the agents
	DriverName  string // CSI driver of injected pods; empty means the default
	// OptIn is who may join the mesh (the injector's rule): pods elsewhere get no entry, even
	// with the marker or a CSI volume of the driver added by hand.
	OptIn nginxmesh.OptIn
	// ResyncPeriod between full resyncs (default 10 min).
	ResyncPeriod time.Duration
	// BatchSize is the most entries per Batch call (default 500; 1 is one call per entry).
	BatchSize int
	// PageSize of ListEntries during a resync (default 1000).
	PageSize int32
	// MaxBackoff bounds the wait between retries after the SPIRE server failed (default 30 s).
	MaxBackoff time.Duration
	// Parallel is how many create batches are in flight at once (default 2): the server spends
	// most of a create on CPU work around its datastore write, which overlaps.
	Parallel int
	// Metrics records lag, entries, deletions and leadership (nil: none).
	Metrics *metrics.Metrics
}

func (c *Config) defaults() {
	if c.ResyncPeriod <= 0 {
		c.ResyncPeriod = 10 * time.Minute
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PageSize <= 0 {
		c.PageSize = 1000
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Parallel <= 0 {
		c.Parallel = 2
	}
}

// Validate names what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.TrustDomain == "" || strings.ContainsAny(c.TrustDomain, "/:") {
		errs = append(errs, fmt.Errorf("trust domain %q: want a bare name such as cluster.local", c.TrustDomain))
	}
	if c.ClusterName == "" {
		errs = append(errs, errors.New("cluster name is empty: set the k8s_psat cluster name of the agents"))
	}
	return errors.Join(errs...)
}

// EntryID is the ID of the entry of the pod with uid.
func EntryID(uid string) string { return nginxmesh.EntryIDPrefix + uid }

// Owned tells whether the controller created the entry (and may delete it).
func Owned(e *types.Entry) bool { return strings.HasPrefix(e.GetId(), nginxmesh.EntryIDPrefix) }

// Wants tells whether pod, in a namespace with nsLabels, should have an entry: injected, in an
// opted-in namespace (OptIn) or the release's own test pod (OptIn.SelfTest), bound to a node,
// not finished.
func (c Config) Wants(pod *corev1.Pod, nsLabels map[string]string) bool {
	return pod.Spec.NodeName != "" &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed &&
		(nginxmesh.Injected{DriverName: c.DriverName}).HasMarker(pod) &&
		(c.OptIn.Skip(pod.Namespace, nsLabels, pod) == "" || c.OptIn.SelfTest(pod))
}

// AgentID is the SPIFFE ID the k8s_psat attestor gives the agent of the node with nodeUID.
func (c Config) AgentID(nodeUID string) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: c.TrustDomain, Path: "/" + path.Join("spire", "agent", "k8s_psat", c.ClusterName, nodeUID)}
}

// WorkloadID is the SPIFFE ID of pods of serviceAccount in namespace.
func (c Config) WorkloadID(namespace, serviceAccount string) *types.SPIFFEID {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return &types.SPIFFEID{TrustDomain: c.TrustDomain, Path: "/ns/" + namespace + "/sa/" + serviceAccount}
}

// Entry is the entry pod should have on the node with nodeUID.
func (c Config) Entry(pod *corev1.Pod, nodeUID string) *types.Entry {
	return &types.Entry{
		Id:        EntryID(string(pod.UID)),
		SpiffeId:  c.WorkloadID(pod.Namespace, pod.Spec.ServiceAccountName),
		ParentId:  c.AgentID(nodeUID),
		Selectors: []*types.Selector{{Type: "k8s", Value: "pod-uid:" + string(pod.UID)}},
	}
}

// SameEntry compares what the controller sets: SPIFFE ID, parent and selectors.
func SameEntry(a, b *types.Entry) bool {
	if idString(a.GetSpiffeId()) != idString(b.GetSpiffeId()) || idString(a.GetParentId()) != idString(b.GetParentId()) || len(a.Selectors) != len(b.Selectors) {
		return false
	}
	for i := range a.Selectors {
		if a.Selectors[i].GetType() != b.Selectors[i].GetType() || a.Selectors[i].GetValue() != b.Selectors[i].GetValue() {
			return false
		}
	}
	return true
}

func idString(id *types.SPIFFEID) string {
	if id == nil {
		return ""
	}
	return (&url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: id.Path}).String()
}

// Plan is what turns the current entries into the desired ones.
type Plan struct {
	Create, Update []*types.Entry
	Delete         []string
	// born is when the pods of Create entries were created, by entry ID: the registration lag.
	born map[string]time.Time
}

// Empty tells whether the plan does nothing.
func (p Plan) Empty() bool { return len(p.Create)+len(p.Update)+len(p.Delete) == 0 }

// Diff plans the full resync: desired and current are by entry ID; only owned current entries
// are ever deleted.
func Diff(desired, current map[string]*types.Entry) Plan {
	var p Plan
	for id, d := range desired {
		switch cur, ok := current[id]; {
		case !ok:
			p.Create = append(p.Create, d)
		case !SameEntry(cur, d):
			p.Update = append(p.Update, d)
		}
	}
	for id, cur := range current {
		if _, ok := desired[id]; !ok && Owned(cur) {
			p.Delete = append(p.Delete, id)
		}
	}
	slices.SortFunc(p.Create, func(a, b *types.Entry) int { return strings.Compare(a.Id, b.Id) })
	slices.SortFunc(p.Update, func(a, b *types.Entry) int { return strings.Compare(a.Id, b.Id) })
	slices.Sort(p.Delete)
	return p
}

// Reconciler runs the registration. Create it with New; Start runs it (a controller-runtime
// Runnable that needs leader election: one writer per SPIRE server).
type Reconciler struct {
	cfg     Config
	client  entryv1.EntryClient
	kube    kubernetes.Interface
	log     logr.Logger
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	nodes   cache.SharedIndexInformer
	nss     cache.SharedIndexInformer // namespaces: the opt-in label

	mu      sync.Mutex
	pending map[string]string // pod UID -> namespace/name of changed pods
	wake    chan struct{}

	current map[string]*types.Entry // owned entries as the SPIRE server has them; run loop only
	synced  atomic.Bool
	resyncs atomic.Int64
}

const byNode = "byNode"

// New builds the reconciler and its informers (pods cut down to what registration reads).
func New(cfg Config, client entryv1.EntryClient, kube kubernetes.Interface, log logr.Logger) (*Reconciler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	r := &Reconciler{cfg: cfg, client: client, kube: kube, log: log, pending: map[string]string{}, wake: make(chan struct{}, 1), current: map[string]*types.Entry{}}
	r.factory = informers.NewSharedInformerFactory(kube, 0)
	r.pods = r.factory.Core().V1().Pods().Informer()
	r.nodes = r.factory.Core().V1().Nodes().Informer()
	r.nss = r.factory.Core().V1().Namespaces().Informer()
	if err := r.pods.SetTransform(trimPod); err != nil {
		return nil, err
	}
	if err := r.nodes.SetTransform(trimNode); err != nil {
		return nil, err
	}
	if err := r.nss.SetTransform(trimNamespace); err != nil {
		return nil, err
	}
	if err := r.pods.AddIndexers(cache.Indexers{byNode: func(o any) ([]string, error) {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, err
	}
	if _, err := r.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.podChanged(o) },
		UpdateFunc: func(old, o any) { r.podChanged(o) },
		DeleteFunc: func(o any) { r.podChanged(o) },
	}); err != nil {
		return nil, err
	}
	if _, err := r.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.nodeChanged(o) },
		UpdateFunc: func(old, o any) { r.nodeChanged(o) },
	}); err != nil {
		return nil, err
	}
	if _, err := r.nss.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.namespaceChanged(o) },
		UpdateFunc: func(old, o any) { r.namespaceChanged(o) },
		DeleteFunc: func(o any) { r.namespaceChanged(o) },
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// trimNamespace keeps the opt-in label only.
func trimNamespace(o any) (any, error) {
	n, ok := o.(*corev1.Namespace)
	if !ok {
		return o, nil
	}
	t := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	if v, ok := n.Labels[nginxmesh.AutoInjectLabel]; ok {
		t.Labels = map[string]string{nginxmesh.AutoInjectLabel: v}
	}
	return t, nil
}

// namespaceChanged re-evaluates the pods of a namespace whose opt-in may have changed.
func (r *Reconciler) namespaceChanged(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	n, ok := o.(*corev1.Namespace)
	if !ok {
		return
	}
	objs, _ := r.pods.GetIndexer().ByIndex(cache.NamespaceIndex, n.Name)
	for _, o := range objs {
		r.podChanged(o)
	}
}

// nsLabels are the labels of namespace ns as the informer has them (nil if unknown: not
// opted in).
func (r *Reconciler) nsLabels(ns string) map[string]string {
	o, ok, _ := r.nss.GetIndexer().GetByKey(ns)
	if !ok {
		return nil
	}
	return o.(*corev1.Namespace).Labels
}

// trimPod keeps what registration reads, so 10,000s of pods cost little memory.
func trimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
			CreationTimestamp: p.CreationTimestamp}, // the registration lag
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	if v, ok := p.Annotations[nginxmesh.InjectedAnnotation]; ok {
		t.Annotations = map[string]string{nginxmesh.InjectedAnnotation: v}
	}
	// The labels the opt-in rule reads: part-of (the mesh's own pods) and component (SelfTest).
	for _, k := range []string{nginxmesh.PartOfLabel, nginxmesh.ComponentLabel} {
		if v, ok := p.Labels[k]; ok {
			if t.Labels == nil {
				t.Labels = map[string]string{}
			}
			t.Labels[k] = v
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.CSI != nil {
			t.Spec.Volumes = append(t.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: v.CSI.Driver}}})
		}
	}
	return t, nil
}

func trimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}, nil
}

func (r *Reconciler) podChanged(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	r.pending[string(p.UID)] = p.Namespace + "/" + p.Name
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// nodeChanged re-evaluates the pods of a node that appeared or was re-created (new UID, so a
// new agent ID and new parents).
func (r *Reconciler) nodeChanged(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	objs, _ := r.pods.GetIndexer().ByIndex(byNode, n.Name)
	for _, o := range objs {
		r.podChanged(o)
	}
}

// Synced is a healthz checker: ready after the first full resync.
func (r *Reconciler) Synced() bool { return r.synced.Load() }

// NeedLeaderElection: one writer of entries.
func (r *Reconciler) NeedLeaderElection() bool { return true }

// Start runs the informers and the loop until ctx ends.
func (r *Reconciler) Start(ctx context.Context) error {
	// controller-runtime starts a runnable that needs leader election only once elected.
	r.cfg.Metrics.SetLeader(true)
	defer r.cfg.Metrics.SetLeader(false)
	r.factory.Start(ctx.Done())
	defer r.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.pods.HasSynced, r.nodes.HasSynced, r.nss.HasSynced) {
		return nil
	}
	backoff := time.Second
	retry := func() bool { // waits before the next attempt; false when ctx ended
		r.log.Info("retrying after a SPIRE server error", "in", backoff.String())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
		return true
	}
	for !r.Synced() {
		if err := r.Resync(ctx); err != nil {
			r.log.Error(err, "initial resync of SPIRE entries failed")
			r.cfg.Metrics.ReconcileFailed()
			if !retry() {
				return nil
			}
		}
	}
	backoff = time.Second
	ticker := time.NewTicker(r.cfg.ResyncPeriod)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
			err = r.applyPending(ctx)
		case <-ticker.C:
			err = r.Resync(ctx)
		}
		if err == nil {
			backoff = time.Second
			continue
		}
		r.log.Error(err, "SPIRE entries not reconciled")
		r.cfg.Metrics.ReconcileFailed()
		if !retry() {
			return nil
		}
		// The failed changes are pending again; a resync after an error also repairs any
		// partial application the loop could not see.
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *Reconciler) takePending() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	r.pending = map[string]string{}
	return p
}

func (r *Reconciler) requeue(p map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, key := range p {
		if _, newer := r.pending[uid]; !newer {
			r.pending[uid] = key
		}
	}
}

// desired is the entry the pod with uid at key should have, or nil, and the pod's creation.
func (r *Reconciler) desired(uid, key string) (*types.Entry, time.Time) {
	o, ok, _ := r.pods.GetIndexer().GetByKey(key)
	if !ok {
		return nil, time.Time{}
	}
	p := o.(*corev1.Pod)
	if string(p.UID) != uid || !r.cfg.Wants(p, r.nsLabels(p.Namespace)) {
		return nil, time.Time{}
	}
	n, ok, _ := r.nodes.GetIndexer().GetByKey(p.Spec.NodeName)
	if !ok {
		return nil, time.Time{} // the node's add event re-evaluates the pod
	}
	return r.cfg.Entry(p, string(n.(*corev1.Node).UID)), p.CreationTimestamp.Time
}

// bornAt notes the creation of the pod of a planned entry.
func (p *Plan) bornAt(id string, t time.Time) {
	if p.born == nil {
		p.born = map[string]time.Time{}
	}
	p.born[id] = t
}

// applyPending applies the changed pods of the events since the last call.
func (r *Reconciler) applyPending(ctx context.Context) error {
	pend := r.takePending()
	if len(pend) == 0 {
		return nil
	}
	var plan Plan
	for uid, key := range pend {
		id := EntryID(uid)
		want, born := r.desired(uid, key)
		cur := r.current[id]
		switch {
		case want != nil && cur == nil:
			plan.Create = append(plan.Create, want)
			plan.bornAt(id, born)
		case want != nil && !SameEntry(want, cur):
			plan.Update = append(plan.Update, want)
		case want == nil && cur != nil:
			plan.Delete = append(plan.Delete, id)
		}
	}
	if err := r.Apply(ctx, plan); err != nil {
		r.requeue(pend)
		return err
	}
	return nil
}

// Resync lists every entry, compares the owned ones with the pods, and applies the difference.
func (r *Reconciler) Resync(ctx context.Context) error {
	start := time.Now()
	r.takePending() // a full resync covers every pending change
	current, err := r.listOwned(ctx)
	if err != nil {
		return err
	}
	r.current = current
	desired := map[string]*types.Entry{}
	born := map[string]time.Time{}
	for _, o := range r.pods.GetIndexer().List() {
		p := o.(*corev1.Pod)
		if e, t := r.desired(string(p.UID), p.Namespace+"/"+p.Name); e != nil {
			desired[e.Id] = e
			born[e.Id] = t
		}
	}
	plan := Diff(desired, current)
	for _, e := range plan.Create {
		plan.bornAt(e.Id, born[e.Id])
	}
	if err := r.Apply(ctx, plan); err != nil {
		return err
	}
	r.synced.Store(true)
	r.resyncs.Add(1)
	r.log.Info("SPIRE entries resynced", "owned", len(current), "wanted", len(desired), "created", len(plan.Create), "updated", len(plan.Update), "deleted", len(plan.Delete), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

var idMask = &types.EntryMask{SpiffeId: true, ParentId: true, Selectors: true}

func (r *Reconciler) listOwned(ctx context.Context) (map[string]*types.Entry, error) {
	out := map[string]*types.Entry{}
	token := ""
	for {
		resp, err := r.client.ListEntries(ctx, &entryv1.ListEntriesRequest{PageSize: r.cfg.PageSize, PageToken: token, OutputMask: idMask})
		if err != nil {
			return nil, fmt.Errorf("list SPIRE entries: %w", err)
		}
		for _, e := range resp.Entries {
			if Owned(e) {
				out[e.Id] = e
			}
		}
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// Apply runs plan in Batch calls of at most BatchSize entries and records the outcome in the
// reconciler's view of the server. Per-entry failures are collected; a similar entry that
// already exists (someone else's) or an entry already gone counts as done.
func (r *Reconciler) Apply(ctx context.Context, plan Plan) error {
	// The gauge follows the view on every way out, failures included.
	defer func() { r.cfg.Metrics.SetEntries(len(r.current)) }()
	var errs []error
	for b := range slices.Chunk(plan.Delete, r.cfg.BatchSize) {
		resp, err := r.client.BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: b})
		if err != nil {
			return fmt.Errorf("delete %d SPIRE entries: %w", len(b), err)
		}
		for _, res := range resp.Results {
			if c := codes.Code(res.GetStatus().GetCode()); c == codes.OK || c == codes.NotFound {
				if c == codes.OK {
					r.cfg.Metrics.Deleted(1)
				}
				delete(r.current, res.Id)
			} else {
				errs = append(errs, fmt.Errorf("delete entry %s: %s", res.Id, res.GetStatus().GetMessage()))
			}
		}
	}
	batches := slices.Collect(slices.Chunk(plan.Create, r.cfg.BatchSize))
	resps := make([]*entryv1.BatchCreateEntryResponse, len(batches))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for i, b := range batches {
		g.Go(func() error {
			resp, err := r.client.BatchCreateEntry(gctx, &entryv1.BatchCreateEntryRequest{Entries: b, OutputMask: idMask})
			if err != nil {
				return fmt.Errorf("create %d SPIRE entries: %w", len(b), err)
			}
			resps[i] = resp
			return nil
		})
	}
	gerr := g.Wait()
	for j, resp := range resps {
		if resp == nil {
			continue // failed or not sent: created by the retry or the next resync
		}
		b := batches[j]
		for i, res := range resp.Results {
			switch c := codes.Code(res.GetStatus().GetCode()); {
			case c == codes.OK:
				r.current[b[i].Id] = b[i]
				r.cfg.Metrics.Registered(plan.born[b[i].Id])
			case c == codes.AlreadyExists:
				// A similar entry exists under another ID (made by hand or by another tool):
				// the workload gets its identity from it, and it is not ours to manage.
				r.log.Info("a similar SPIRE entry exists; not creating another", "entry", b[i].Id, "existing", res.GetEntry().GetId())
			default:
				errs = append(errs, fmt.Errorf("create entry %s (%s): %s", b[i].Id, idString(b[i].SpiffeId), res.GetStatus().GetMessage()))
			}
		}
	}
	if gerr != nil {
		return gerr
	}
	for b := range slices.Chunk(plan.Update, r.cfg.BatchSize) {
		resp, err := r.client.BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{Entries: b, InputMask: idMask, OutputMask: idMask})
		if err != nil {
			return fmt.Errorf("update %d SPIRE entries: %w", len(b), err)
		}
		for i, res := range resp.Results {
			if codes.Code(res.GetStatus().GetCode()) == codes.OK {
				r.current[b[i].Id] = b[i]
			} else {
				errs = append(errs, fmt.Errorf("update entry %s: %s", b[i].Id, res.GetStatus().GetMessage()))
			}
		}
	}
	return errors.Join(errs...)
}
