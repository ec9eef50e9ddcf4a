"""The review site: one self-contained HTML page per batch of masks (``review/index.html``) and per
scan, with an interactive NiiVue viewer, lesion tables, pictures and reviewer marks."""
