"""Clean-room thermal LivePortrait: networks F, M, W, G, S, checkpoint loading and the retargeting algorithm."""
