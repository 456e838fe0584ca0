"""The access stage (STARTING): the destinations, the Gemini key and the dataset URLs answer,
checked before the dataset and the base model download, so a bad one costs no GPU time."""
