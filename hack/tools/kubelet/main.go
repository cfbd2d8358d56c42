// Command kubelet is the upstream kubelet, built from the same k8s.io/kubernetes version and
// staging tags as the control plane in ../k8s, so the one real node matches the API server.
// It is a module of its own so that its dependencies (cAdvisor, the CRI client, volume
// plugins) never enter the control plane's go.sum and cache key.
package main

import (
	"context"
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
