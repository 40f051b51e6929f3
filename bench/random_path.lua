-- wrk script: every request asks for one of the paths listed in the file given after `--`,
-- chosen at random, so a cache is exercised over many keys rather than one.
local paths = {}

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return wrk.format(nil, paths[math.random(#paths)])
end
