"""The cutover.dev API: typed models of every custom resource, and CRD generation from them."""
