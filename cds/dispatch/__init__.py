"""cds/dispatch"""
