from attic.cli import main

main()
