"""netfault"""
