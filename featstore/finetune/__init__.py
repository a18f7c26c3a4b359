"""`featstore finetune`: networks trained end to end with TensorFlow, from ImageNet weights or from
scratch, saved as runs whose backbone the rest of featstore reuses."""
