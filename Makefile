# nginx-mesh: the two set-up commands are `make demo` and `make test` (see README.md).
SHELL   := /bin/bash
# Go's tarball puts it in /usr/local/go/bin, which a fresh machine often lacks on PATH (.ci/run adds
# it the same way). Recipes, and the ci/ scripts they run, find go on the exported PATH; $(shell)
# does not see an exported PATH before make 4.4, so GO names the binary itself.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= /usr/local/go/bin/go
endif
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nginx-mesh/nginx-mesh.Version=$(VERSION)
# Two helm tools share the name `helm`: `go tool` needs the full package path of each.
HELM    := $(GO) tool helm.sh/helm/v3/cmd/helm
HELM4   := $(GO) tool helm.sh/helm/v4/cmd/helm
CHART   := charts/nginx-mesh
SCRIPTS := $(shell git ls-files ci .ci | xargs grep -lE '^(\#!/usr/bin/env bash|\# shellcheck shell=bash)' 2>/dev/null)
# The product's binaries: every main package named nginx-mesh-* (the name the Dockerfiles COPY
# from bin/). Lazy (=), so only build and push pay for the `go list`.
CMDS     = $(shell $(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./... | grep '/nginx-mesh-[^/]*$$')

# make push REGISTRY=host[:port][/path] [TAG=...] [PLATFORMS=...] [PLAIN_HTTP=auto|true|false] [COMPRESSION=gzip|zstd]
REGISTRY      ?=
TAG           ?= $(VERSION)
PLATFORMS     ?= linux/amd64,linux/arm64
PLAIN_HTTP    ?= auto
COMPRESSION   ?= gzip
CHART_VERSION ?=
PUSH_OUT      ?= bin/push

.PHONY: all build test unit lint e2e images push bench bench-cluster bench-proxy demo cluster-up cluster-down docs

all: build

## build: static binaries in bin/ (CGO off)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(CMDS)

## test: everything CI runs: lint, unit and peer suites, end-to-end on the local cluster
test: lint unit e2e

## unit: go test ./... (root-only tests run when root; csi-sanity runs against the real binary)
unit:
	$(GO) test -count=1 ./...

## lint: gofmt, go vet (also with the e2e tag), a build for macOS, shellcheck of every script, helm lint --strict for both profiles with Helm 3 and Helm 4
lint:
	@ci/packages.sh install >/dev/null  # shellcheck comes from Debian (no-op when present)
	shellcheck -x $(SCRIPTS)
	@if git grep -n -E '^(<<<<<<< |>>>>>>> )' -- ':!ci/tools'; then echo "conflict markers left (above)"; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^ci/tools/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./ci/e2e/
	GOOS=darwin $(GO) build ./...
	@for h in '$(HELM)' '$(HELM4)'; do \
	  for f in $(CHART)/values.yaml $(CHART)/values-openshift.yaml $(CHART)/ci/*.yaml; do \
	    echo "$$h lint --strict $(CHART) -f $$f"; $$h lint --strict --quiet $(CHART) -f $$f || exit 1; \
	  done; \
	done

## docs: regenerate the chart's parameter table with helm-docs (charts/render tests fail when it is stale)
docs:
	$(GO) tool helm-docs --chart-search-root charts

## images: OCI tarballs of the product's images in bin/images (no Docker needed)
images: build
	ci/images.sh

## push: the product images (multi-arch), the SPIRE images and the chart to REGISTRY, no Docker
##       needed; the binaries report TAG as their version; writes $(PUSH_OUT)/values-images.yaml
##       (digests for the chart), digests.txt, push.json, sbom/ (module lists)
push:
	REGISTRY='$(REGISTRY)' TAG='$(TAG)' PLATFORMS='$(PLATFORMS)' PLAIN_HTTP='$(PLAIN_HTTP)' COMPRESSION='$(COMPRESSION)' \
	  CHART_VERSION='$(CHART_VERSION)' PUSH_OUT='$(PUSH_OUT)' CMDS='$(CMDS)' \
	  LDFLAGS='-s -w -X github.com/nginx-mesh/nginx-mesh.Version=$(TAG)' ci/push.sh

## bench: benchmarks with their report (numbers quoted in README.md come from here)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./csi/... ./hooks/... ./controller/...

## bench-proxy: nginx-mesh-proxy against NGINX (Debian nginx + stream module), same run, same certificates; prints the table of proxy/README.md
bench-proxy:
	$(GO) test -run '^$$' -bench ProxyVsNGINX -benchtime 1x -timeout 30m ./proxy/bench/

## bench-cluster: the hooks benchmarks against the real local apiserver (50,000 pods; starts/stops the cluster)
bench-cluster:
	ci/bench-cluster.sh

# NODES=N (1..9) sets the local cluster's number of nodes for cluster-up, e2e, test and demo; unset:
# the running cluster's, else 3 (ci/lib.sh).
NODES_ENV = $(if $(NODES),NODES='$(NODES)')

## cluster-up / cluster-down: the real local cluster in ci/ (three nodes; NODES=1 for one)
cluster-up:
	$(NODES_ENV) ci/cluster.sh up

cluster-down:
	ci/cluster.sh down

## e2e: every lifecycle flow on the local cluster
e2e:
	$(NODES_ENV) ci/e2e.sh

## demo: start the local cluster, install the OpenShift profile, run an injected workload
demo:
	$(NODES_ENV) ci/demo.sh
