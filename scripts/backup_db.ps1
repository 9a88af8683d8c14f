# Verified, rotated backup of the app's databases (Windows): the old entry
# point, kept so that existing Task Scheduler entries such as
#   powershell -ExecutionPolicy Bypass -File "C:\path\to\scripts\backup_db.ps1" both
# keep working. It runs `upkeep.exe backup ENV [--keep=N]`, as backup_db.sh
# does: upkeep.exe is $env:UPKEEP, else upkeep.exe on PATH, else the newest
# release or debug build in $env:CARGO_TARGET_DIR (default
# ~\.cache\upkeep-target); the config is $env:UPKEEP_CONFIG, else
# upkeep.yaml in the folder above this script. Exit codes are upkeep's
# (0 ok, 1 failed, 2 bad input, 4 busy); wrong arguments exit 2.
#
# Plain $args, no param() block: PowerShell would take `--keep=50` for a
# parameter name and refuse it.

$ErrorActionPreference = 'Stop'

function Show-Usage {
    [Console]::Error.WriteLine('usage: backup_db.ps1 production|staging|both [--keep=N]')
    exit 2
}

$envName = $null
$keep = @()
for ($i = 0; $i -lt $args.Count; $i++) {
    $arg = [string]$args[$i]
    if (($arg -in @('production', 'staging', 'both')) -and -not $envName) {
        $envName = $arg
    } elseif ($arg -like '--keep=*') {
        $keep = @($arg)
    } elseif ($arg -eq '--keep' -and $i + 1 -lt $args.Count) {
        $i++
        $keep = @("--keep=$($args[$i])")
    } else {
        Show-Usage
    }
}
if (-not $envName) { Show-Usage }

$upkeep = $env:UPKEEP
if (-not $upkeep) {
    $onPath = Get-Command upkeep.exe -ErrorAction SilentlyContinue
    if ($onPath) { $upkeep = $onPath.Source }
}
if (-not $upkeep) {
    $target = if ($env:CARGO_TARGET_DIR) { $env:CARGO_TARGET_DIR } else { Join-Path $HOME '.cache\upkeep-target' }
    $upkeep = @('release', 'debug') |
        ForEach-Object { Join-Path $target "$_\upkeep.exe" } |
        Where-Object { Test-Path $_ } |
        Sort-Object { (Get-Item $_).LastWriteTime } -Descending |
        Select-Object -First 1
}
if (-not $upkeep) {
    [Console]::Error.WriteLine('upkeep not found: set UPKEEP=C:\path\to\upkeep.exe, put upkeep.exe on PATH, or build it with cargo')
    exit 1
}

$config = @()
$yaml = Join-Path $PSScriptRoot '..\upkeep.yaml'
if (-not $env:UPKEEP_CONFIG -and (Test-Path $yaml)) {
    $config = @('--config', (Resolve-Path $yaml).Path)
}

& $upkeep @config backup $envName @keep
exit $LASTEXITCODE
