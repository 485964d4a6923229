"""Items, dataset recipes, splits and few-shot episodes."""
