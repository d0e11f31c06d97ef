from varsel.cli import main

main()
