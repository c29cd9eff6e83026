package uninstall

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

func typesUID(s string) types.UID { return types.UID(s) }

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
