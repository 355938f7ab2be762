"""RepL: the method (plan, fusion, surrogates, bake); the model families it knows are in repl.families."""
