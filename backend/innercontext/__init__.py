"""innercontext backend: product catalogue API and pricing worker."""
