"""jupyter-server side of AISpike Hub (runs inside the notebook server)."""
