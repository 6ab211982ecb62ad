"""Stand-in data: labelled scenes on real photos, for models trained in place of released ones."""
