"""cds/scheduling"""
