# nginx-mesh: the two set-up commands are `make demo` and `make test` (see README.md).
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nginx-mesh/nginx-mesh.Version=$(VERSION)
HELM    := $(GO) tool helm
CHART   := charts/nginx-mesh
SCRIPTS := $(shell git ls-files ci .ci | xargs grep -lE '^(\#!/usr/bin/env bash|\# shellcheck shell=bash)' 2>/dev/null)

.PHONY: all build test unit lint e2e images bench bench-cluster bench-proxy demo cluster-up cluster-down docs

all: build

## build: static binaries in bin/ (CGO off)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./csi/cmd/nginx-mesh-csi-driver ./hooks/cmd/nginx-mesh-hooks ./proxy/cmd/nginx-mesh-proxy ./controller/cmd/nginx-mesh-controller

## test: everything CI runs: lint, unit and peer suites, end-to-end on the local cluster
test: lint unit e2e

## unit: go test ./... (root-only tests run when root; csi-sanity runs against the real binary)
unit:
	$(GO) test -count=1 ./...

## lint: gofmt, go vet (also with the e2e tag), a build for macOS, shellcheck of every script, helm lint --strict for both profiles
lint:
	@ci/packages.sh install >/dev/null  # shellcheck comes from Debian (no-op when present)
	shellcheck -x $(SCRIPTS)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^ci/tools/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./ci/e2e/
	GOOS=darwin $(GO) build ./...
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/values-openshift.yaml
	@for f in $(CHART)/ci/*.yaml; do echo "$(HELM) lint --strict $(CHART) -f $$f"; $(HELM) lint --strict --quiet $(CHART) -f $$f || exit 1; done

## docs: regenerate the chart's parameter table with helm-docs (charts/render tests fail when it is stale)
docs:
	$(GO) tool helm-docs --chart-search-root charts

## images: OCI tarballs of the product's images in bin/images (no Docker needed)
images: build
	ci/images.sh

## bench: benchmarks with their report (numbers quoted in README.md come from here)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./csi/... ./hooks/... ./controller/...

## bench-proxy: nginx-mesh-proxy against NGINX (Debian nginx + stream module), same run, same certificates; prints the table of proxy/README.md
bench-proxy:
	$(GO) test -run '^$$' -bench ProxyVsNGINX -benchtime 1x -timeout 30m ./proxy/bench/

## bench-cluster: the hooks benchmarks against the real local apiserver (50,000 pods; starts/stops the cluster)
bench-cluster:
	ci/bench-cluster.sh

## cluster-up / cluster-down: the real single-node cluster in ci/
cluster-up:
	ci/cluster.sh up

cluster-down:
	ci/cluster.sh down

## e2e: every lifecycle flow on the local cluster
e2e:
	ci/e2e.sh

## demo: start the local cluster, install the OpenShift profile, run an injected workload
demo:
	ci/demo.sh
