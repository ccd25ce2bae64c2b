// kstatus prints the kstatus of Kubernetes objects: the status Flux's
// kustomize-controller computes for its health checks (`wait: true`,
// `healthChecks`), from the same library (sigs.k8s.io/cli-utils
// pkg/kstatus/status; Flux vendors it as the fork github.com/fluxcd/cli-utils,
// whose pkg/kstatus/status is the same code).
//
// It reads JSON from standard input: one object, or a List as printed by
// `kubectl get -o json`, and prints one line per object:
//
//	STATUS<TAB>KIND<TAB>NAMESPACE/NAME<TAB>MESSAGE
//
// or, with -json, a JSON array of {kind, namespace, name, status, message}.
// An object kstatus cannot read gets the status "Unknown" and the error as its
// message; malformed input exits with status 2.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type objectStatus struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func objects(input []byte) ([]map[string]interface{}, error) {
	var top map[string]interface{}
	// utiljson keeps integers int64 (encoding/json makes them float64), as
	// unstructured objects need: metadata.generation is read as an int64.
	if err := utiljson.Unmarshal(input, &top); err != nil {
		return nil, fmt.Errorf("standard input is not a JSON object: %w", err)
	}
	items, isList := top["items"]
	if !isList {
		return []map[string]interface{}{top}, nil
	}
	list, ok := items.([]interface{})
	if !ok {
		return nil, fmt.Errorf("items is not a list")
	}
	result := make([]map[string]interface{}, 0, len(list))
	for i, item := range list {
		object, ok := item.(map[string]interface{})
		if !ok {
			return nil, fmt.Errorf("items[%d] is not an object", i)
		}
		result = append(result, object)
	}
	return result, nil
}

func compute(object map[string]interface{}) objectStatus {
	u := &unstructured.Unstructured{Object: object}
	out := objectStatus{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	result, err := status.Compute(u)
	if err != nil {
		out.Status, out.Message = string(status.UnknownStatus), err.Error()
		return out
	}
	out.Status, out.Message = string(result.Status), result.Message
	return out
}

func main() {
	asJSON := flag.Bool("json", false, "print a JSON array instead of one line per object")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: kubectl get KIND -o json | kstatus [-json]")
		flag.PrintDefaults()
	}
	flag.Parse()
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading standard input:", err)
		os.Exit(2)
	}
	list, err := objects(input)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
	results := make([]objectStatus, 0, len(list))
	for _, object := range list {
		results = append(results, compute(object))
	}
	if *asJSON {
		encoder := json.NewEncoder(os.Stdout)
		encoder.SetIndent("", "  ")
		if err := encoder.Encode(results); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
		return
	}
	for _, r := range results {
		fmt.Printf("%s\t%s\t%s/%s\t%s\n", r.Status, r.Kind, r.Namespace, r.Name, r.Message)
	}
}
