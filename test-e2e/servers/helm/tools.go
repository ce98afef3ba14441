//go:build tools

// Package tools pins helm's command, which this module builds for the chart's tests (helm lint,
// helm template, helm upgrade), so that `go mod tidy` keeps its dependencies in go.sum.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
