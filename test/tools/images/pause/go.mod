module local/berth-pause

go 1.26
