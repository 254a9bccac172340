"""Review a label run in the browser: the least sure answers first, fixed by keystroke, exported."""
