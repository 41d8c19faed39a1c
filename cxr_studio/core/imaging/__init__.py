"""Reading radiographs, masks and lesion outlines; the one PNG writer; preprocessing."""
