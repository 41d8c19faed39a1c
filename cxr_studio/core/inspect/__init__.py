"""Looking inside a model: activations, placement, saliency methods, features, views, lesion scores."""
