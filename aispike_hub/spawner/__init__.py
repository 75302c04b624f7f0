"""The hub side: options form model (form.py), AISpikeSpawner (kube.py), admission interface."""
