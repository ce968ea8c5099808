"""The end-to-end suite: a Cluster manifest becomes autoscaled pods that run a user's job (issue 18).

The same scenarios run on two platforms: a real cluster (TASUKI_E2E_KUBECONFIG) or the local target
(the Kubernetes API emulation, the real operator, real kubectl and helm, and a kubelet that runs
each Pod as a Docker container). See e2e/README.md.
"""
