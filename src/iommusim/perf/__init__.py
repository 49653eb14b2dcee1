"""Workloads and performance studies driven on the virtual clock."""
