"""cds/intake"""
