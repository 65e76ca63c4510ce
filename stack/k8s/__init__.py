"""The AFTER topology as Kubernetes manifests (`stackctl render k8s`)."""
from stack.k8s.output import WriteResult, write_manifests
from stack.k8s.render import K8sOptions, Note, Rendered, render
from stack.k8s.validate import validate_all, validate_object

__all__ = ["K8sOptions", "Note", "Rendered", "WriteResult", "render", "validate_all",
           "validate_object", "write_manifests"]
