"""modelpress.search"""
