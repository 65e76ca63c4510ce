"""What each week's notebook calls (week1 ... week4, the nginx audit of week 2), and the
runner of `make course`."""
