"""The store on disk: layout, feature-set files and their parts, heads and fine-tune runs as
folders, the run log, maintenance."""
