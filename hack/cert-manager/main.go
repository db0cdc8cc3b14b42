// Command cert-manager runs the subset of cert-manager's controllers the OpenBao operator's tests
// need, wired from the public packages of the cert-manager Go module
// (github.com/cert-manager/cert-manager). The module proxy serves that library module but not the
// module of upstream's controller binary (cmd/controller), so this is our own small main: it
// builds cert-manager's ContextFactory, constructs the registered controllers by name, starts the
// shared informer factories and runs the controllers until SIGINT/SIGTERM.
//
// Deliberately absent: the webhook and cainjector (the v1 CRDs carry their own OpenAPI defaults
// and validation; nothing here needs conversion), ACME/Vault/Venafi issuers, the certificate
// shims (Ingress/Gateway), the metrics and health servers, and leader election (one replica,
// out of cluster, run by a test or the hermetic node).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each import registers its controllers with controller.Register in an init function.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// Issuer implementations the (Cluster)Issuer controllers set up (the Ready condition).
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// defaultControllers is what runs without --controllers: the Certificate pipeline (trigger →
// key manager → request manager → issuing, plus readiness and revision clean-up), the
// CertificateRequest approver (signers wait for Approved=True; without the webhook's policy
// nothing else approves), the signers for the `ca` and `selfsigned` issuer types, and the
// (Cluster)Issuer status controllers.
var defaultControllers = []string{
	"certificates-trigger",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-issuing",
	"certificates-readiness",
	"certificates-revision-manager",
	"certificaterequests-approver",
	"certificaterequests-issuer-ca",
	"certificaterequests-issuer-selfsigned",
	"issuers",
	"clusterissuers",
}

type options struct {
	kubeconfig               string
	namespace                string
	clusterResourceNamespace string
	controllers              string
	workers                  int
}

func main() {
	var opts options
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "path to a kubeconfig (empty: in-cluster config)")
	fs.StringVar(&opts.namespace, "namespace", "", "the only namespace to watch (empty: all namespaces)")
	// Upstream's documented default; a ClusterIssuer of type `ca` reads its key pair from here.
	fs.StringVar(&opts.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace of the Secrets that ClusterIssuers refer to")
	fs.StringVar(&opts.controllers, "controllers", strings.Join(defaultControllers, ","),
		"comma-separated controller names to run (each must be compiled in)")
	fs.IntVar(&opts.workers, "workers", 2, "worker goroutines per controller")
	klog.InitFlags(fs) // -v for cert-manager's log levels (4 = debug)
	if err := fs.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logf.InitLogs()
	defer logf.FlushLogs()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		klog.ErrorS(err, "cert-manager stopped")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(ctx context.Context, opts options) error {
	names, err := selectControllers(opts.controllers)
	if err != nil {
		return err
	}
	ctx = logf.NewContext(ctx, logf.Log)
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig: opts.kubeconfig,
		Namespace:  opts.namespace,
		// Used only when the apiserver has no API Priority and Fairness (it has by default).
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: opts.clusterResourceNamespace,
		},
		CertificateOptions: controller.CertificateOptions{
			// Upstream's defaults: a failed issuance is retried after 1 h, doubling up to 32 h.
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}

	// Constructing a controller registers the informers it needs with the shared factories;
	// the factories start only the informers requested so far, so they start afterwards.
	type runnable struct {
		name string
		ctl  controller.Interface
	}
	runnables := make([]runnable, 0, len(names))
	for _, name := range names {
		ctl, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("constructing controller %q: %w", name, err)
		}
		runnables = append(runnables, runnable{name, ctl})
	}
	// The factory keeps its informer factories private; every Context it builds shares them.
	shared, err := factory.Build("informers")
	if err != nil {
		return fmt.Errorf("building the informer context: %w", err)
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	shared.GWShared.Start(ctx.Done())
	klog.InfoS("cert-manager controllers starting", "controllers", names, "namespace", opts.namespace)

	var wg sync.WaitGroup
	errs := make(chan error, len(runnables))
	for _, r := range runnables {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.ctl.Run(opts.workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %q: %w", r.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// selectControllers validates a comma-separated list against the compiled-in registry.
func selectControllers(list string) ([]string, error) {
	known := controller.Known()
	var names []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := known[n]; !ok {
			available := make([]string, 0, len(known))
			for k := range known {
				available = append(available, k)
			}
			sort.Strings(available)
			return nil, fmt.Errorf("unknown controller %q (compiled in: %s)", n, strings.Join(available, ", "))
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil, errors.New("--controllers names no controller")
	}
	return names, nil
}
