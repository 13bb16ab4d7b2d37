from kanban.cli import main

main()
