"""Images as users have them: scanning folders and manifests, decoding, augmentation, splits."""
