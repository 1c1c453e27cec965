from oonibackend.cli import main

main()
