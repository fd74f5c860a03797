"""LivePortrait's networks, one file per network named after the paper's symbol (F, M, W with its dense motion, G, S),
and their shared blocks."""
