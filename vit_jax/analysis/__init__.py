"""What a model learned: the paper's analyses as numbers (`attention`) and as figures
(`figures`)."""
