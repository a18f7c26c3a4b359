"""`featstore extract`: images -> backbone -> feature set, resumable and cached by content."""
