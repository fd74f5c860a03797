"""Where corpus bytes come from: local folders and zips, zips at a URL read by range requests, the Hub."""
