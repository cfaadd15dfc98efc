from sia.cli import main

main()
