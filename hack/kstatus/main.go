// kstatus prints what sigs.k8s.io/cli-utils' kstatus computes for each object it is given: the
// status Flux's kustomize-controller (wait, healthChecks) and `kubectl wait`-style tools read.
// Each argument is a YAML or JSON file holding one object; each output line is a JSON object
// {"path", "status", "message"} in argument order. Exits non-zero when a file cannot be read or
// kstatus returns an error for it.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Path    string `json:"path"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func compute(path string) (result, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return result{}, err
	}
	doc, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", path, err)
	}
	// Unstructured's own JSON decoding, as client-go's: whole numbers become int64, which
	// kstatus' generation checks require.
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(doc); err != nil {
		return result{}, fmt.Errorf("%s: %w", path, err)
	}
	res, err := status.Compute(&obj)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", path, err)
	}
	return result{Path: path, Status: res.Status.String(), Message: res.Message}, nil
}

func main() {
	out := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		res, err := compute(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		if err := out.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
	}
}
