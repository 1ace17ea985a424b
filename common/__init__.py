"""mlref's shared lifecycle library: data, metrics, training, tracking, registry, serving, batch, monitoring,
retraining and reports. Every app under `apps/` builds on it; no app imports another app."""

__version__ = "0.1.0"
