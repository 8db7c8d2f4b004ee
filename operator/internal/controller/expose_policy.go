package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tailscale/hujson"
	corev1 "k8s.io/api/core/v1"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/proto/contract"
)

// unownedTags returns the tags in tags that the tailnet policy does not
// list in tagOwners, or nil. A policy the operator cannot read (the
// credentials may lack the scope) is no reason to refuse: the control
// plane still refuses the key or the node then.
//
// Headscale mints a key for any tag and tags the node with it, so without
// this check a typo would make a node whose tag no rule mentions.
func unownedTags(ctx context.Context, cp controlplane.Client, tags []string) []string {
	pol, err := cp.GetPolicy(ctx)
	if err != nil {
		return nil
	}
	owners, err := policyTagOwners(pol.Body)
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range tags {
		if _, ok := owners[t]; !ok {
			out = append(out, t)
		}
	}
	return out
}

// policyTagOwners parses the tagOwners of a HuJSON policy.
func policyTagOwners(body string) (map[string][]string, error) {
	std, err := hujson.Standardize([]byte(body))
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var p struct {
		TagOwners map[string][]string `json:"tagOwners"`
	}
	if err := json.Unmarshal(std, &p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p.TagOwners, nil
}

// proxyResources are the resources an owner's annotations ask for, or nil
// for the operator's defaults; a list left out keeps its default.
func proxyResources(annotations map[string]string, def corev1.ResourceRequirements) (*corev1.ResourceRequirements, error) {
	req, lim := annotations[contract.AnnotationProxyRequests], annotations[contract.AnnotationProxyLimits]
	if req == "" && lim == "" {
		return nil, nil
	}
	r := *def.DeepCopy()
	var err error
	if req != "" {
		if r.Requests, err = ResourceList(contract.AnnotationProxyRequests, req); err != nil {
			return nil, err
		}
	}
	if lim != "" {
		if r.Limits, err = ResourceList(contract.AnnotationProxyLimits, lim); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// ResourceList parses "cpu=10m,memory=32Mi"; what names the input in
// errors.
func ResourceList(what, s string) (corev1.ResourceList, error) {
	r, err := sidecar.ParseResources(s, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %s", what, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "--adapter-requests"), ": "))
	}
	return r.Requests, nil
}
