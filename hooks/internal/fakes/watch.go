package fakes

import "k8s.io/apimachinery/pkg/watch"

type watchI = watch.Interface
