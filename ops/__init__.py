"""Operator tools: watch a cluster form, wait for it, draw its timeline, fetch its kubeconfig.

Everything here reads the status records the nodes write to Consul (see the node contract);
nothing here writes to Consul or to Terraform state.
"""
