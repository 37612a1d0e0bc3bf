"""The clinic's own domain, free of I/O: phone numbers, Jalali dates, weekly hours and slots."""
